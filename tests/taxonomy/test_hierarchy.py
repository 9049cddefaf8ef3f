import numpy as np
import pytest

from taxonomy.hierarchy import Hierarchy, HierarchyError


@pytest.fixture
def tree() -> Hierarchy:
    # 0 Rock, 1 Rock/Punk, 2 Rock/Punk/Hardcore, 3 Jazz, 4 Jazz/Bebop
    return Hierarchy(np.array([-1, 0, 1, -1, 3]), ("Rock", "Punk", "Hardcore", "Jazz", "Bebop"))


def test_depth_children_and_top_level(tree: Hierarchy) -> None:
    assert tree.depth.tolist() == [0, 1, 2, 0, 1]
    assert tree.children[0].tolist() == [1]
    assert tree.top_level.tolist() == [0, 0, 0, 3, 3]
    assert tree.is_leaf.tolist() == [False, False, True, False, True]


def test_ancestor_close_propagates_through_levels(tree: Hierarchy) -> None:
    closed = tree.ancestor_close(np.array([[0, 0, 1, 0, 1]]))
    assert closed.tolist() == [[1, 1, 1, 1, 1]]
    assert tree.not_ancestor_closed(np.array([[0, 0, 1, 0, 0], [1, 1, 1, 0, 0]])).tolist() == [
        True,
        False,
    ]


def test_make_consistent_and_conditional(tree: Hierarchy) -> None:
    p = np.array([[0.5, 0.8, 0.9, 0.4, 0.2]])
    c = tree.make_consistent(p)
    assert c.tolist() == [[0.5, 0.5, 0.5, 0.4, 0.2]]
    cond = tree.conditional(c)
    np.testing.assert_allclose(cond, [[0.5, 1.0, 1.0, 0.4, 0.5]])


def test_cycles_and_bad_indices_are_rejected() -> None:
    with pytest.raises(HierarchyError, match="cycle"):
        Hierarchy(np.array([1, 0, -1]))
    with pytest.raises(HierarchyError, match="outside"):
        Hierarchy(np.array([-1, 5]))
    with pytest.raises(HierarchyError, match="own parent"):
        Hierarchy(np.array([0]))


def test_from_paths_creates_missing_ancestors() -> None:
    h = Hierarchy.from_paths(["Rock/Punk", "Rock", "Jazz/Bebop"])
    assert h.names == ("Rock", "Rock/Punk", "Jazz", "Jazz/Bebop")
    assert h.parents.tolist() == [-1, 0, -1, 2]
