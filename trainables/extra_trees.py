from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

from trainables._forest import ForestFamily


class ExtraTrees(ForestFamily):
    """scikit-learn extremely randomised trees; a budget step adds trees."""

    name = "extra_trees"
    classifier = ExtraTreesClassifier
    regressor = ExtraTreesRegressor
