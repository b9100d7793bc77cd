// pgJDBC (Debian's libpostgresql-jdbc-java) through pgferry, run as a
// single-file program: java -cp /usr/share/java/postgresql.jar Jdbc.java URL.
// With prepareThreshold=1 every statement is a named server-side statement
// (S_1, S_2, ...) from its first run; with readOnlyMode=always,
// setReadOnly sends SET SESSION CHARACTERISTICS. Prints "OK <case>" or "FAIL <case>: <what>" per case;
// router/drivers_e2e_test.go runs it with pgferry's URL (a pool of two
// servers: clients share them).
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;

public class Jdbc {
    static String url;

    static Connection open() throws SQLException {
        Properties p = new Properties();
        p.setProperty("prepareThreshold", "1");
        p.setProperty("readOnlyMode", "always"); // (the default, "transaction", sends nothing in autocommit)
        return DriverManager.getConnection(url, p);
    }

    static void result(String name, List<String> problems) {
        if (problems.isEmpty()) {
            System.out.println("OK " + name);
        } else {
            System.out.println("FAIL " + name + ": " + String.join("; ", problems.subList(0, Math.min(5, problems.size()))) + " (" + problems.size() + " in all)");
        }
    }

    static void searchPath() throws Exception {
        try (Connection c = open(); Statement s = c.createStatement()) {
            for (int i = 0; i < 4; i++) {
                s.execute("create schema jd_" + i + "; create table jd_" + i + ".t(v int); insert into jd_" + i + ".t values (" + i + ")");
            }
        }
        List<String> problems = Collections.synchronizedList(new ArrayList<>());
        ExecutorService ex = Executors.newFixedThreadPool(4);
        List<Future<?>> fs = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            final int id = i;
            fs.add(ex.submit(() -> {
                try (Connection c = open()) {
                    try (Statement s = c.createStatement()) {
                        s.execute("set search_path to jd_" + id);
                    }
                    try (PreparedStatement ps = c.prepareStatement("select v + ? from t")) {
                        for (int k = 0; k < 25; k++) {
                            ps.setInt(1, k);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                if (rs.getInt(1) != id + k) problems.add("client " + id + " read " + (rs.getInt(1) - k));
                            }
                        }
                    }
                } catch (SQLException e) {
                    problems.add("client " + id + ": " + e.getSQLState() + " " + e.getMessage());
                }
                return null;
            }));
        }
        for (Future<?> f : fs) f.get();
        ex.shutdown();
        result("search_path", problems);
    }

    static void readOnly() throws Exception {
        // setReadOnly(true) is SET SESSION CHARACTERISTICS AS TRANSACTION
        // READ ONLY: this client's writes fail, another's do not.
        List<String> problems = new ArrayList<>();
        try (Connection a = open(); Connection b = open()) {
            try (Statement s = a.createStatement()) {
                s.execute("create table if not exists jd_ro(v int)");
            }
            a.setReadOnly(true);
            for (int k = 0; k < 10; k++) {
                try (Statement s = a.createStatement()) {
                    s.execute("insert into jd_ro values (1)");
                    problems.add("the read-only client wrote");
                } catch (SQLException e) {
                    if (!"25006".equals(e.getSQLState())) problems.add("the read-only client: " + e.getSQLState());
                }
                try (PreparedStatement ps = b.prepareStatement("insert into jd_ro values (?)")) {
                    ps.setInt(1, k);
                    ps.executeUpdate();
                } catch (SQLException e) {
                    problems.add("the other client: " + e.getSQLState() + " " + e.getMessage());
                }
            }
        }
        result("read only", problems);
    }

    static void listen() throws Exception {
        List<String> problems = new ArrayList<>();
        try (Connection l = open(); Connection n = open()) {
            try (Statement s = l.createStatement()) {
                s.execute("LISTEN jd_ch");
            }
            for (int i = 0; i < 50; i++) {
                try (Statement s = n.createStatement()) {
                    s.execute("NOTIFY jd_ch, '" + i + "'");
                }
            }
            PGConnection pg = l.unwrap(PGConnection.class);
            int got = 0;
            long end = System.currentTimeMillis() + 5000;
            while (got < 50 && System.currentTimeMillis() < end) {
                PGNotification[] ns = pg.getNotifications(200);
                if (ns != null) got += ns.length;
            }
            if (got != 50) problems.add(got + " of 50 notifications");
        }
        result("listen", problems);
    }

    static void transactions() throws Exception {
        List<String> problems = new ArrayList<>();
        try (Connection c = open()) {
            try (Statement s = c.createStatement()) {
                s.execute("create table if not exists jd_tx(v int)");
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("insert into jd_tx values (?)")) {
                ps.setInt(1, 1);
                ps.executeUpdate();
            }
            c.rollback();
            try (Statement s = c.createStatement()) {
                s.execute("select 1/0");
                problems.add("1/0 did not fail");
            } catch (SQLException e) {
                if (!"22012".equals(e.getSQLState())) problems.add("1/0: " + e.getSQLState());
            }
            c.rollback();
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select count(*) from jd_tx")) {
                rs.next();
                if (rs.getInt(1) != 0) problems.add("a rolled back insert left " + rs.getInt(1) + " rows");
            }
            c.commit();
        }
        result("transactions", problems);
    }

    static void manyStatements() throws Exception {
        // More distinct named statements than pgferry keeps per server (200).
        List<String> problems = new ArrayList<>();
        try (Connection c = open(); Connection d = open()) {
            for (int i = 0; i < 300; i++) {
                try (PreparedStatement ps = c.prepareStatement("select ?::int + " + i);
                     PreparedStatement qs = d.prepareStatement("select ?::int * " + i)) {
                    ps.setInt(1, 1);
                    qs.setInt(1, 2);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != 1 + i) problems.add("statement " + i + " gave " + rs.getInt(1));
                    }
                    try (ResultSet rs = qs.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != 2 * i) problems.add("the other's statement " + i + " gave " + rs.getInt(1));
                    }
                }
            }
        }
        result("prepared statements", problems);
    }

    public static void main(String[] args) throws Exception {
        url = args[0];
        String[] names = {"searchPath", "readOnly", "listen", "transactions", "manyStatements"};
        for (String name : names) {
            try {
                Jdbc.class.getDeclaredMethod(name).invoke(null);
            } catch (java.lang.reflect.InvocationTargetException e) {
                System.out.println("FAIL " + name + ": " + e.getCause());
            }
        }
    }
}
