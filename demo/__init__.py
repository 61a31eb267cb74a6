"""The demos: the bundled digits task, the real photo sets, and the converted ImageNet backbone."""
