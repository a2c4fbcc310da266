"""The shop database's side: queries, their rows as listing JSON, and a replica to read from.

source.py runs the queries with either driver; encode.py turns MySQL values into JSON
bytes; replica.py picks the replica or the primary per batch; driver_pymysql.py and
driver_mysqlclient.py are the two drivers' fast listing reads.
"""
