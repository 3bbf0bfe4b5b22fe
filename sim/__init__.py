"""A discrete-event simulator of a WWW.Serve network that drives the live node's own policy and routing code.

`sim.engine` models an LLM engine, `sim.network` the nodes, links and ledger (its inputs in `sim.config`,
its records in `sim.records`, its parts in `sim.network_*`), `sim.duels` duels on the contract's model,
`sim.workloads` the request streams, `sim.scenarios` the paper's experiments; `wwwserve sim` runs them.
"""
