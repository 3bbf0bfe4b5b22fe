"""The attack suite of issue 12: one module per attack of its table (A1-A9), each run against the real
contract (titanoboa, both deployed contracts) and, in lockstep, against `ledger.model` (the `Twin`
harness of tests/unit/contract_fixtures.py: same calls, same outcomes, same revert reasons, same
events, same state after every call). Each test asserts that the attack reverts, cannot influence
what it targets, or does not pay.

Economics (expected profit per duel over thousands of Monte Carlo duels, judge accuracy 0.9/0.7)
live in bench/attacks.py; here are the contract-side rules those numbers rest on.

A10 (the user is served by whichever duel answer arrives first) is a property of the node, not of
the contract: it is tested with the node's dispatch code, not here.
"""
