"""Leave the scene exactly as it was when a job fails or is cancelled."""

from __future__ import annotations


def node_ids(scene) -> list[str]:
    """IDs of all nodes in ``scene`` (in scene order)."""
    return [scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())]


class SceneTransaction:
    """Context manager: on an exception, remove every node added to ``scene`` inside the block.

    Nodes that existed before are never modified by the module's jobs until their last step (the
    result is computed into new nodes first), so removing the new nodes restores the scene.

    >>> with SceneTransaction(scene):
    ...     segmentation_node = add_segmentation_node(...)   # removed again if anything raises
    """

    def __init__(self, scene) -> None:
        self.scene = scene
        self._before: set[str] = set()

    def __enter__(self) -> "SceneTransaction":
        self._before = set(node_ids(self.scene))
        return self

    def added_node_ids(self) -> list[str]:
        return [node_id for node_id in node_ids(self.scene) if node_id not in self._before]

    def rollback(self) -> None:
        """Remove the nodes added since the block started, newest first."""
        for node_id in reversed(self.added_node_ids()):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            self.rollback()
        return False
