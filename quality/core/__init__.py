"""Label-quality science: hierarchy-aware issue detection and multi-annotator consensus (numpy only)."""

from quality.core.label_issues import (
    ISSUE_TYPES,
    LabelIssues,
    LabelStructureReport,
    check_label_structure,
    decision_scores,
    find_label_issues,
    label_quality_scores,
    labels_to_dense,
)

__all__ = [
    "ISSUE_TYPES",
    "LabelIssues",
    "LabelStructureReport",
    "check_label_structure",
    "decision_scores",
    "find_label_issues",
    "label_quality_scores",
    "labels_to_dense",
]
