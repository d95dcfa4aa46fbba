"""chatui's test suite: `pytest` from the repository root runs it all (see CONTRIBUTING.md)."""
