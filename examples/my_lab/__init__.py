"""An example of a user's own lab package: entries registered from outside the project."""
