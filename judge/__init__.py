"""Duel scheduling, judge prompts, vote parsing and verdict submission. Built in a later issue."""
