"""Loaders for public logged LLM-routing data; each returns :class:`~router.data.schema.Outcomes`.

Every loader takes an explicit ``path`` (file or folder) that defaults to its place under
:func:`router.data.paths.data_dir`, sets ``source``, ``quality_kind``, ``cost_kind`` and ``split`` (where
the source has one), and records every row it removes in ``Outcomes.dropped``. Each module's docstring
says what quality and cost mean for that source. Use :func:`router.data.registry.load_source` to load
by name.

==========================  ==================================================  ============  ==========
loader                      source                                              quality       cost
==========================  ==================================================  ============  ==========
``load_routerbench``        RouterBench wide table (RouterDC's CSV copy, .pkl)  binary        logged
``load_routellm_mmlu``      RouteLLM MMLU (gpt-4 vs Mixtral)                    binary        estimated
``load_routellm_gsm8k``     RouteLLM GSM8K                                      binary        estimated
``load_routellm_mt_bench``  RouteLLM MT-Bench, GPT-4 grades                     score         estimated
``load_routerarena``        RouterArena cached results                          score         logged
``load_llmrouter``          LLMRouter DC-router data (9 NIM models)             score         estimated
``load_routerdc``           RouterDC 7-model data                               score         estimated
==========================  ==================================================  ============  ==========
"""

from router.data.loaders._common import prompts_in_several_splits
from router.data.loaders.llmrouter import load_llmrouter
from router.data.loaders.routellm import load_routellm_gsm8k, load_routellm_mmlu, load_routellm_mt_bench
from router.data.loaders.routerarena import load_routerarena
from router.data.loaders.routerbench import load_routerbench
from router.data.loaders.routerdc import load_routerdc

__all__ = [
    "load_llmrouter",
    "load_routellm_gsm8k",
    "load_routellm_mmlu",
    "load_routellm_mt_bench",
    "load_routerarena",
    "load_routerbench",
    "load_routerdc",
    "prompts_in_several_splits",
]
