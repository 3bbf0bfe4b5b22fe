"""The serving node (OpenAI-compatible API, five managers, PoS delegation). Built in a later issue."""
