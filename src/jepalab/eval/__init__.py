"""Evaluation: probes, retrieval, rollouts, closed-loop panels and the evidence they produce.

Import the submodules directly (`jepalab.eval.evidence`, `.rules`, `.store`, `.card`, ...); this
package imports nothing so that `jepalab.eval.store` stays cheap for worker processes.
"""
