// PgJDBC (Debian's libpostgresql-jdbc-java) driven through a SQL Proxy worker by
// tests/integration/test_jdbc.py.
//
// Runs a fixed sequence of the protocol paths a Java application uses and prints one
// "key=value" line per result. The Python test runs it against PostgreSQL directly and through
// the worker, compares the two outputs, and checks them against exact expected values. Only
// deterministic values are printed (no pids, no timestamps of now).
//
// Usage: java -cp postgresql.jar:DIR Exercise HOST PORT DATABASE USER PASSWORD TABLE
// prepareThreshold=1 makes the driver use named server-side prepared statements from the first
// execution, which is what transaction pooling has to carry from one server connection to the
// next. Exit status 0 with the lines on stdout; 1 with the exception on stderr.

import java.math.BigDecimal;
import java.sql.Array;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public final class Exercise {
    private Exercise() {}

    private static void out(String key, Object value) {
        System.out.println(key + "=" + value);
    }

    private static Connection connect(String[] a, boolean autocommit) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", a[3]);
        if (!a[4].isEmpty()) {
            p.setProperty("password", a[4]);
        }
        p.setProperty("sslmode", "disable");
        p.setProperty("prepareThreshold", "1");
        p.setProperty("ApplicationName", "jdbc-exercise");
        Connection c = DriverManager.getConnection(
            "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2], p);
        c.setAutoCommit(autocommit);
        return c;
    }

    private static long count(Connection c, String table) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT count(*) FROM " + table)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    public static void main(String[] a) throws Exception {
        String table = a[5];
        if (!table.matches("[a-z_][a-z0-9_]*")) {
            throw new IllegalArgumentException("TABLE must be a plain lower-case identifier");
        }
        try (Connection c = connect(a, true)) {
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery(
                     "SELECT 1 AS one, 'two'::text AS two, NULL::int AS nothing, true AS yes")) {
                rs.next();
                out("simple", rs.getInt(1) + "|" + rs.getString(2) + "|" + rs.getObject(3)
                    + "|" + rs.getBoolean(4));
            }

            long sum = 0;
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sum += rs.getInt(1);
                    }
                }
            }
            out("prepared_sum", sum);

            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS " + table);
                s.execute("CREATE TABLE " + table + " (id int PRIMARY KEY, note text)");
            }
            try (PreparedStatement ps = c.prepareStatement(
                     "INSERT INTO " + table + " (id, note) VALUES (?, ?)")) {
                for (int i = 1; i <= 100; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.addBatch();
                }
                int total = 0;
                for (int n : ps.executeBatch()) {
                    total += n;
                }
                out("batch_inserted", total);
            }
            out("count_after_batch", count(c, table));

            // A batch whose 3rd statement fails: the whole implicit transaction rolls back.
            try (PreparedStatement ps = c.prepareStatement(
                     "INSERT INTO " + table + " (id, note) VALUES (?, 'dup')")) {
                for (int id : new int[] {1000, 1001, 1, 1002}) {
                    ps.setInt(1, id);
                    ps.addBatch();
                }
                ps.executeBatch();
                out("batch_error", "none");
            } catch (BatchUpdateException e) {
                out("batch_error", e.getNextException() != null
                    ? e.getNextException().getSQLState() : e.getSQLState());
            }
            out("count_after_failed_batch", count(c, table));

            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT * FROM no_such_table_jdbc");
                out("error", "none");
            } catch (SQLException e) {
                out("error", e.getSQLState());
            }

            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery(
                     "SELECT '2024-01-02'::date, 1.50::numeric(4,2), '\\x616263'::bytea,"
                     + " ARRAY[1,2,3], 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid,"
                     + " '{\"k\": [1, 2]}'::jsonb")) {
                rs.next();
                Array arr = rs.getArray(4);
                Integer[] ints = (Integer[]) arr.getArray();
                out("types", rs.getDate(1) + "|" + rs.getBigDecimal(2) + "|"
                    + new String(rs.getBytes(3), "UTF-8") + "|" + ints.length + ":" + ints[2]
                    + "|" + rs.getObject(5) + "|" + rs.getString(6));
            }

            try (ResultSet rs = c.getMetaData().getTables(null, "public", table, null)) {
                int n = 0;
                while (rs.next()) {
                    n++;
                }
                out("metadata_tables", n);
            }

            // setQueryTimeout makes the driver send a CancelRequest on its own connection.
            try (Statement s = c.createStatement()) {
                s.setQueryTimeout(1);
                s.executeQuery("SELECT pg_sleep(10)");
                out("timeout", "none");
            } catch (SQLException e) {
                out("timeout", e.getSQLState());
            }
            out("after_timeout", count(c, table));
        }

        try (Connection c = connect(a, false)) {
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO " + table + " VALUES (500, 'rolled back')");
            }
            c.rollback();
            out("count_after_rollback", count(c, table));
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO " + table + " VALUES (501, 'committed')");
            }
            c.commit();
            out("count_after_commit", count(c, table));

            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1/0");
            } catch (SQLException e) {
                out("tx_error", e.getSQLState());
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1");
                out("after_tx_error", "ran");
            } catch (SQLException e) {
                out("after_tx_error", e.getSQLState());
            }
            c.rollback();

            // A server-side cursor: fetch size with autocommit off reads through a portal in
            // chunks (Execute with a row limit, PortalSuspended).
            try (PreparedStatement ps = c.prepareStatement(
                     "SELECT g, md5(g::text) FROM generate_series(1, ?) g")) {
                ps.setFetchSize(7);
                ps.setInt(1, 50);
                long total = 0;
                int rows = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        total += rs.getInt(1);
                        rows++;
                    }
                }
                out("cursor", rows + "|" + total);
            }
            c.commit();
        }

        // Two clients interleaving the same named statements: in transaction mode they share
        // server connections, so each statement must be carried to whichever one serves.
        try (Connection c1 = connect(a, true); Connection c2 = connect(a, true);
             PreparedStatement p1 = c1.prepareStatement(
                 "SELECT note FROM " + table + " WHERE id = ?");
             PreparedStatement p2 = c2.prepareStatement(
                 "SELECT count(*) FROM " + table + " WHERE id <= ?")) {
            StringBuilder seen = new StringBuilder();
            for (int i = 1; i <= 20; i++) {
                p1.setInt(1, i);
                p2.setInt(1, i);
                try (ResultSet r1 = p1.executeQuery(); ResultSet r2 = p2.executeQuery()) {
                    r1.next();
                    r2.next();
                    if (!r1.getString(1).equals("row " + i) || r2.getLong(1) != i) {
                        seen.append("mismatch at ").append(i).append(';');
                    }
                }
            }
            out("interleaved", seen.length() == 0 ? "ok" : seen.toString());
        }

        try (Connection c = connect(a, true); Statement s = c.createStatement()) {
            s.execute("DROP TABLE " + table);
            BigDecimal check = new BigDecimal("0.1").add(new BigDecimal("0.2"));
            out("done", check);
        }
    }
}
