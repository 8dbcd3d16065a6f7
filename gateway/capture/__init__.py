"""Sampled request capture for retraining and audits (`[models.<name>.capture]`):
`settings` are the table's keys, `writer` samples and queues, `sinks` write files or S3
objects, `records` is the format and its reading back (`sluice capture read`). Nothing is
imported here: the configuration loads `settings` alone, without numpy's or boto3's weight."""
