"""The network explorer: a web page over the node's event index, served by every node at `/explorer` and by
`wwwserve explorer` without a node.

`explorer.queries` reads the indexer's tables (paged, indexed queries); `explorer.api` serves them as JSON
together with the page in `explorer/static/` (no build step, nothing fetched at run time). The data come from
the indexer, never from the browser talking to the chain.
"""
