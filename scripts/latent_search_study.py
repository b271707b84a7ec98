"""progcodec eval with other latent-search settings, for docs/latent-search.md.

    python scripts/latent_search_study.py FRACTIONS BOOST eval ARGS...

FRACTIONS: the keep-fractions the search scores, as JSON (e.g. '[0.15, 1.0]'); BOOST: factor
on lambda for the fractions below 0.2 (1: training's lambdas). The rest is a progcodec command
line, e.g. `eval ../shared/data/kodak -o runs/x --limit 4 --search 5`.
"""
import json
import sys

from progcodec import cli, latent_search

fractions = tuple(json.loads(sys.argv[1]))
boost = float(sys.argv[2])
lambda_of_keep = latent_search.lambda_of_keep
latent_search.lambda_of_keep = lambda q: lambda_of_keep(q) * (boost if q < 0.2 else 1.0)
latent_search.search_latent.__kwdefaults__["keep_fractions"] = fractions
sys.argv = ["progcodec"] + sys.argv[3:]
cli.main()
