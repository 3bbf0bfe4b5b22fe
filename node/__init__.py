"""The serving node (`wwwserve node run`): an OpenAI-compatible API in front of a provider's own LLM
engine, delegating to peers chosen by stake, signing every answer, paying peers with fee vouchers and
taking part in duels.

`app` (the FastAPI app: user API, signed peer API, `/metrics`), `main` (build and run a node from its
`settings`), `managers/` (model, request and dispatch, policy, ledger, communication, duel), `backends/`
(fake, the local CPU model, vLLM, any OpenAI-compatible server), `policy` and `routing` (pure decisions
and stake-weighted peer choice, which the simulator runs too), `envelope`, `endpoints`, `signing`,
`vouchers` and `billing` (peer messages, results and payment), `protocol` and `errors` (wire models and
the one error envelope), `http` (the outbound client), `serving` (connection limits) and `metrics`.
"""
