"""A discrete-event simulator of a WWW.Serve network that drives the live node's own policy and routing code.

`sim.engine` models an LLM engine, `sim.network` the nodes, links and ledger, `sim.workloads` the request
streams, `sim.scenarios` the paper's experiments; `wwwserve sim` runs them.
"""
