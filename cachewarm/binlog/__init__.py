"""`cachewarm follow`'s side: the MySQL binary log, read as invalidations.

server.py checks what the server must offer and opens the event stream; rows.py
reads only the mapped columns of a row event; changes.py turns rows into product
ids; checkpoint.py keeps where to resume; follow.py is the follower's loop.
"""
