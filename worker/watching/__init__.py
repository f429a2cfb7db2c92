"""Watching the drop folder: intake and scan (watcher), settling, batching into chains (enqueue), putting drops
away after their outcome (finalize), requeueing lost ones, and the fd-relative file operations under it all.
"""
