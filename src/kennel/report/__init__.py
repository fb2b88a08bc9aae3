"""What a run shows a person: ``report.html`` (:mod:`~kennel.report.page`) and the plots in it
(:mod:`~kennel.report.plots`), shared by training, evaluation and monitoring runs."""

from kennel.report.page import Holder, RunReport, holders, log_report

__all__ = ["Holder", "RunReport", "holders", "log_report"]
