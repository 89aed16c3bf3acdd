"""Follow-up of lymph nodes between two CT examinations: nodal response by RECIST 1.1 and Lugano 2014.

:mod:`.response` classifies the response from the diameters of nodes tracked across the
examinations (no image work); the registration and matching that produce those tracked nodes live
in their own modules of this package.
"""

from .response import (
    LesionDiameters,
    ResponseAssessment,
    TrackedNode,
    assess_response,
    select_target_nodes,
)

__all__ = ["LesionDiameters", "ResponseAssessment", "TrackedNode", "assess_response", "select_target_nodes"]
