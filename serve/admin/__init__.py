"""``python -m serve.admin``: manage the tenant store (API keys, budgets and limits) from the command line."""
