"""The call core: plain classes that never await, never touch a socket and never read a clock."""
