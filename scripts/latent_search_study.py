"""progcodec eval with other latent-search settings, for docs/latent-search.md.

    python scripts/latent_search_study.py FRACTIONS BOOST eval ARGS...

FRACTIONS: the keep-fractions the search scores, as JSON (e.g. '[0.15, 1.0]'); BOOST: factor
on lambda for the fractions below 0.2 (1: training's lambdas). The rest is a progcodec command
line, e.g. `eval ../shared/data/kodak -o runs/x --limit 4 --search 5`.
"""
import json
import sys

import torch

from progcodec import cli, latent_search

fractions = tuple(json.loads(sys.argv[1]))
boost = float(sys.argv[2])
lambda_of_keep = latent_search.lambda_of_keep
latent_search.lambda_of_keep = lambda q, *a: lambda_of_keep(q, *a) * torch.where(q < 0.2, boost, 1.0)
latent_search.search_latent.__kwdefaults__["keep_fractions"] = fractions
# the search of y alone, as it was for this study (--search-z became the default later)
sys.argv = ["progcodec"] + sys.argv[3:] + ["--no-search-z"]
cli.main()
