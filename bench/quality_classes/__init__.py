"""The parts of bench/incentives.py (three quality classes on a real network; that script runs them).

  common    the classes, the models the nodes serve, the MATH500 problems, CSV files
  judge     the reference judge (a text heuristic served as an OpenAI-compatible endpoint), and SmolLM2-135M
            as a judge, measured in process
  analysis  win rates, pair outcomes, judge agreement and stake shares per class (pure: unit-tested)
  network   anvil, the contract and the nodes of one run; the requests; the duels read back from the chain
  report    the printed report, report.md, summary.json and the share plot
"""
