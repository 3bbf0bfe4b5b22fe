"""wwwserve: a decentralized network of LLM service providers (WWW.Serve, arXiv 2603.20661)."""

__version__ = "0.1.0"
