from moebench.testing import check_algorithm, check_dataset


def test_algorithm_conforms():
    assert check_algorithm("annealed-em")


def test_dataset_conforms():
    assert check_dataset("piecewise-linear", {"n": 200, "n_test": 50})
