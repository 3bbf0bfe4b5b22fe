"""The parts of bench/sim_vs_live.py: the scenario both sides run (`scenario`), the comparison of their
results (`compare`), and the run on a real anvil network (`live`)."""
