"""The run loop: ``decide`` over the folded run state, the commands it names, their performers,
the recorder that appends what they yield, and the ports every answer comes through."""
