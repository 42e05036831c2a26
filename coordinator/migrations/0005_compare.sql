-- For jobs validated with the module's `compare` mode: the equivalence
-- class of a returned output, named by the output hash of the first replica
-- of the unit in that class (NULL: its own output hash).
ALTER TABLE replicas ADD COLUMN output_class TEXT;
