# %% [markdown]
# # Quickstart: from logged traffic to an evaluated router
#
# A tutorial in percent-cell format (open it in VS Code or Jupyter with jupytext, or run it as a
# script: `make test` runs it top to bottom). It uses the synthetic traffic generator, so it needs
# no data download and finishes in seconds.

# %%
import polars as pl

from router.data.reduce import to_traffic_log
from router.data.splits import split_outcomes
from router.data.synthetic import generate
from router.encoders import HashingEncoder
from router.metrics import evaluate_curves
from router.ope import evaluate_policy
from router.predictors import KNNPredictor
from router.router import Router

# %% [markdown]
# ## 1. Data: full-information outcomes with a known ground truth

# %%
data = generate(2000, seed=0)
train, test = split_outcomes(data.outcomes, seed=0)
print(data.outcomes)
print(train.per_model_frame())

# %% [markdown]
# ## 2. Train a router and route a few requests

# %%
router = Router.fit(train, encoder=HashingEncoder(dim=256), predictor=KNNPredictor(k=20))
decisions = router.route(["Prove rigorously a theorem about prime numbers",
                          [{"role": "system", "content": "You write code."},
                           {"role": "user", "content": "Implement a lock-free concurrent version of a thread pool"}]],
                         lam=50.0)
for name, reason in zip(decisions.chosen, decisions.reasons):
    print(name, "<-", reason)

# %% [markdown]
# ## 3. Offline evaluation: cost-quality curve, AIQ, savings (flat rows for a DataFrame)

# %%
lams, choices, probs, q_hat = router.sweep(list(test.prompts))
result = evaluate_curves(test, {"knn": (lams, choices)}, n_bootstrap=100, seed=0)
summary = result.to_frame()
print(summary)
assert summary.height >= 1

# %% [markdown]
# ## 4. Off-policy estimate on bandit-feedback logs
#
# Replay the held-out outcomes through a uniform logging policy (what production logs look like),
# then estimate the router's value at lambda = 50 from the log alone and compare with the truth.

# %%
log, _ = to_traffic_log(test, policy="uniform", seed=0)
target = router.route(list(test.prompts), lam=50.0).probabilities
pos = {m: i for i, m in enumerate(test.models)}
action = log["chosen_model"].replace_strict(pos).to_numpy()
reward = (log["quality"] - 50.0 * log["cost"]).to_numpy()
context = router.embed(list(test.prompts))[0]  # features for the cross-fitted reward model of DM / DR
ope = evaluate_policy(reward, action, log["propensity"].to_numpy(), target, context=context, n_bootstrap=100)
truth = float(((test.quality - 50.0 * test.cost) * target).sum(axis=1).mean())
rows = pl.DataFrame(ope.rows())
print(rows.filter(pl.col("method") == "normal"))
print(f"true value {truth:.3f}")
