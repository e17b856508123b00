"""Plug-ins for other training frameworks. Each submodule is imported only on demand and is the only place that
imports its framework: `import lidarseg` never requires mmsegmentation.

    lidarseg.integrations.mmseg      the subclassified loss as an mmsegmentation 1.x loss (`pip install -e ".[mmseg]"`)
"""
