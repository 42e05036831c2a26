-- The network prefix (/24 for IPv4, /48 for IPv6) a replica was leased
-- from, when the coordinator keeps replicas of a unit on distinct networks.
ALTER TABLE replicas ADD COLUMN net TEXT;
CREATE INDEX replicas_by_net_unit ON replicas (net, unit_id) WHERE net IS NOT NULL;
