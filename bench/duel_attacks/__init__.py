"""The attacks of issue 12 as Monte Carlo runs over the contract's model, by family (`bench/attacks.py` runs them).

  stats    means with 95 % intervals: Student t over batch means, Wilson for shares
  common   the constants every cell shares, `Cell`, and driving duels on a `sim.duels.DuelChain`
  honest   the honest network (H), the user served by the primary executor (A10), the simulator's quality
           scenario over seeds
  origin   what an origin can try: duel a victim against its own identity (A1), choose which duels to open
           or other request bytes (A2), withhold evidence (A5)
  stake    how stake is placed: grinding the judge panel (A3), splitting one stake into Sybils (A4)
  exits    leaving: right after answering (A6), griefing an exiting node (A7)
  judges   judging: colluding judges (A8), lazy judges (A9)
"""
