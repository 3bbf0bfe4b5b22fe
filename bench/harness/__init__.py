"""The benchmark harness that bench/'s scripts share (bench/ is on sys.path: `from harness.procs import ...`).

  common        names every part uses: the model name, the loopback host, folders, `BenchError`
  fake_backend  the instant OpenAI-compatible backend (raw asyncio HTTP/1.1), run as
                `bench/serving.py --serve-fake-backend PORT`
  load          the load generator: a minimal keep-alive HTTP/1.1 client in worker processes
  stats         percentiles, latency and throughput figures
  procs         the processes a run starts (anvil, the contract, demo nodes, helpers) and stops, through
                the project's launcher (devnet/localnet.py)
  node_metrics  what a node's /metrics and answers say about delegation
  litellm_proxy LiteLLM's proxy, installed on first use into bench/.venv-litellm
  profiling     py-spy recordings of server processes
  report        the serving benchmark's figures: per-path results, the issue's targets, the table
  sse           reading an OpenAI-style SSE stream on the client side (bench/soak.py, the chaos tier)
"""
