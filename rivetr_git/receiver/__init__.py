"""The SSH receiver: who is pushing, to which app, and the git process that receives it."""
