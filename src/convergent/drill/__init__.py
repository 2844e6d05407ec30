"""Drills: kill and restart processes running your workflows and check nothing is lost.

`convergent drill-app` runs `run_app_drill`; `Managed` and `free_port` serve any drill harness.
"""

from convergent.drill.processes import Managed, free_port

__all__ = ["Managed", "free_port"]
