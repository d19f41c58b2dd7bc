"""Evaluators as plug-ins (`config.evals.<name> = dict(type=...)`, common.py) and the evaluation protocols
behind them: frozen-encoder few-shot probes, raw-feature anchors, one-shot episode accuracy, reconstruction
pictures.
"""
