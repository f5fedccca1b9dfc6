"""Per-target compile recipes (see `medge.devices.recipes.base`)."""

from medge.devices.recipes.base import RECIPES, CompileContext, Recipe, RecipeResult

__all__ = ["RECIPES", "CompileContext", "Recipe", "RecipeResult"]
