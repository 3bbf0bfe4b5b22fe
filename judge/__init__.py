"""Duels from the judging side (docs/duels.md): the evidence and the vote rules (`evidence`), the judge's
prompt and how a reply becomes a vote (`prompt`), its vote journal and schedule (`journal`), its work loop
(`runner`), each node's evidence store (`store`), the chain as the duel roles see it (`chain`), and a
leaderboard of duel results (`leaderboard`). The node's Duel manager (`manager`, built as a node feature by
`feature`) is one class whose duties live by role in `duties`, `origin`, `duelist`, `executor`, `exchange`
and `challenger`."""
