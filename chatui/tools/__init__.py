"""The tools the model can call: the registry (`registry`), and the built-in ones (`builtin`).

Imports none of them: the app's first frame needs only `protocol` (an approval's answers).
"""
