"""What a shop worker process imports: the shop's workflows and its consumers (read models).

``convergent worker --import convergent_shop.background`` runs them with the toolkit's standard
loops.
"""

from convergent_shop import readmodels, workflows

__all__ = ["readmodels", "workflows"]
