# The command lives with the integration; Django only discovers commands in an app's package.
from annotation.integrations.labelstudio.command import Command

__all__ = ["Command"]
