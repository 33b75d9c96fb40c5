package policy

// SecondNamesSQL returns an expression whose value is the md5 of the
// second names reaching the relations of oids (an oid[] expression): every
// relation whose rows reach theirs (views and rules reading or writing
// them, children and parents, foreign tables pointing at them, and so on,
// transitively, as the catalog query's reach), by OID, qualified name and
// kind, with the rules (and their actions: a view's definition) and
// transition-table triggers on them, the objects
// built on their row types and the subscriptions writing into them.
//
// The session reads it with its catalog; catalog_check compares it when it
// accepts an epoch that the session's own DDL moved on: own DDL the
// rewriter saw makes no second name of a policy table (it refuses that
// DDL), but DDL the session runs inside a function created on the server
// (its body never seen by phiproxy, dynamic SQL built from pieces) does,
// and the epoch alone would take that view for the session's own, known
// change. Names are qualified by hand, not through regclass output, so
// that the value is the same under every search_path.
func SecondNamesSQL(oids string) string {
	return secondNamesHead + oids + secondNamesTail
}

// secondNamesHead and secondNamesTail are SecondNamesSQL around its oids
// (constants, for catalog_check's body).
const secondNamesHead = `(SELECT pg_catalog.md5(coalesce(pg_catalog.string_agg(g.x, E'\n' ORDER BY g.x), '')) FROM (
  WITH RECURSIVE ra(oid, down) AS (
    SELECT o, true FROM pg_catalog.unnest(`

const secondNamesTail = `) o WHERE o IS NOT NULL
    UNION SELECT x.oid, x.down FROM ra, LATERAL (
      SELECT r.ev_class AS oid, false AS down FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid OPERATOR(pg_catalog.=) d.objid
       WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
         AND d.refobjid OPERATOR(pg_catalog.=) ra.oid AND r.ev_class OPERATOR(pg_catalog.<>) ra.oid
      UNION ALL SELECT i.inhrelid, true FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) ra.oid AND ra.down
      UNION ALL SELECT i.inhparent, false FROM pg_catalog.pg_inherits i WHERE i.inhrelid OPERATOR(pg_catalog.=) ra.oid
      UNION ALL SELECT ft.ftrelid, false FROM pg_catalog.pg_foreign_table ft
        JOIN pg_catalog.pg_class fc ON fc.oid OPERATOR(pg_catalog.=) ft.ftrelid JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) fc.relnamespace,
        pg_catalog.pg_class rc JOIN pg_catalog.pg_namespace rn ON rn.oid OPERATOR(pg_catalog.=) rc.relnamespace
       WHERE rc.oid OPERATOR(pg_catalog.=) ra.oid AND ft.ftrelid OPERATOR(pg_catalog.<>) ra.oid
         AND coalesce((SELECT pg_catalog.substr(o, 12) FROM pg_catalog.unnest(ft.ftoptions) o WHERE pg_catalog.left(o, 11) OPERATOR(pg_catalog.=) 'table_name=' LIMIT 1), fc.relname::pg_catalog.text) OPERATOR(pg_catalog.=) rc.relname::pg_catalog.text
         AND coalesce((SELECT pg_catalog.substr(o, 13) FROM pg_catalog.unnest(ft.ftoptions) o WHERE pg_catalog.left(o, 12) OPERATOR(pg_catalog.=) 'schema_name=' LIMIT 1), fn.nspname::pg_catalog.text) OPERATOR(pg_catalog.=) rn.nspname::pg_catalog.text) x),
  rs AS (SELECT DISTINCT ra.oid FROM ra)
  SELECT 'rel ' OPERATOR(pg_catalog.||) c.oid OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.'
         OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname) OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) c.relkind::pg_catalog.text AS x
    FROM rs JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) rs.oid JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  UNION SELECT 'rule ' OPERATOR(pg_catalog.||) r.oid OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) r.rulename OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) r.ev_class
         OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) pg_catalog.md5(r.ev_action::pg_catalog.text)
    FROM pg_catalog.pg_rewrite r JOIN rs ON rs.oid OPERATOR(pg_catalog.=) r.ev_class
  UNION SELECT 'trigger ' OPERATOR(pg_catalog.||) tg.oid OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) tg.tgrelid
    FROM pg_catalog.pg_trigger tg JOIN rs ON rs.oid OPERATOR(pg_catalog.=) tg.tgrelid WHERE tg.tgoldtable IS NOT NULL OR tg.tgnewtable IS NOT NULL
  UNION SELECT 'rowtype ' OPERATOR(pg_catalog.||) d.classid OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) d.objid OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) d.objsubid
         OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) coalesce((pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid)).identity, '')
    FROM pg_catalog.pg_depend d
   WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass AND d.deptype OPERATOR(pg_catalog.=) 'n'
     AND d.refobjid IN (SELECT c.reltype FROM pg_catalog.pg_class c JOIN rs ON rs.oid OPERATOR(pg_catalog.=) c.oid WHERE c.reltype OPERATOR(pg_catalog.<>) 0
                        UNION SELECT t.typarray FROM pg_catalog.pg_class c JOIN rs ON rs.oid OPERATOR(pg_catalog.=) c.oid JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) c.reltype WHERE t.typarray OPERATOR(pg_catalog.<>) 0)
  UNION SELECT 'subscription ' OPERATOR(pg_catalog.||) sr.srsubid OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) sr.srrelid
    FROM pg_catalog.pg_subscription_rel sr JOIN rs ON rs.oid OPERATOR(pg_catalog.=) sr.srrelid
) g)`
