"""progcodec eval with other settings of the joint search of y and z (encode --search-z, the
default), for docs/latent-search.md.

    python scripts/joint_search_study.py Z_LR FRACTIONS [Z_WEIGHT] [g_s-only] eval ARGS...

Z_LR: Adam step on z (latent_search.Z_LR is the default); FRACTIONS: the keep-fractions the
search scores, as JSON (e.g. '[0.01, 0.04, 0.15, 1.0]'); Z_WEIGHT: factor on the bits of z
in the objective (latent_search.Z_WEIGHT is the default); g_s-only: score every keep-fraction
with g_s, also those that g_s_low decodes (codec.SEARCH_SCORES_G_S_LOW = False). The rest is a
progcodec command line, e.g. `eval ../shared/data/kodak -o runs/x --limit 4 --search 10`.
"""
import json
import sys

from progcodec import cli, codec, latent_search

defaults = latent_search.search_latent_and_hyper.__kwdefaults__
defaults["z_lr"] = float(sys.argv[1])
defaults["keep_fractions"] = tuple(json.loads(sys.argv[2]))
rest = sys.argv[3:]
if rest[0] not in ("eval", "g_s-only"):
    defaults["z_weight"] = float(rest.pop(0))
if rest[0] == "g_s-only":
    codec.SEARCH_SCORES_G_S_LOW = False
    rest.pop(0)
sys.argv = ["progcodec"] + rest
cli.main()
