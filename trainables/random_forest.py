from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from trainables._forest import ForestFamily


class RandomForest(ForestFamily):
    """scikit-learn random forest; a budget step adds trees."""

    name = "random_forest"
    classifier = RandomForestClassifier
    regressor = RandomForestRegressor
