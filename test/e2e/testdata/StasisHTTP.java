// A JVM service for the checkpoint tests (test/e2e/java_test.go), run with
// `java StasisHTTP.java PORT READY HOOKFILE`: an HTTP server
// (com.sun.net.httpserver) on a pool of 32 threads started in advance, 16
// worker threads that count, a 200000-entry HashMap, and a hot method the
// JIT has compiled before READY is written. /check reports, from inside the
// JVM, whether the heap, the compiled code, the workers, the JIT and the GC
// are as they were and still work; a shutdown hook (SIGTERM) writes
// HOOKFILE.
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

public class StasisHTTP {
    static final int ENTRIES = 200_000;
    static final int WORKERS = 16;
    static final Map<Integer, String> data = new HashMap<>();
    static final AtomicLong[] ticks = new AtomicLong[WORKERS];
    static final AtomicLong requests = new AtomicLong();
    static long wantSum, wantHot, wantCold;

    // hot is what the JIT compiles during the warm-up; cold only runs (and
    // gets compiled) after a restore, by the restored compiler threads.
    static long hot(int n) {
        long h = 1469598103934665603L;
        for (int i = 0; i < n; i++) {
            h ^= i * 31L + (h >>> 7);
            h *= 1099511628211L;
        }
        return h;
    }

    static long cold(int n) {
        long h = 7;
        for (int i = 0; i < n; i++) {
            h = h * 131 + (i ^ (h >>> 11));
        }
        return h;
    }

    static long sum() {
        long s = 0;
        for (Map.Entry<Integer, String> e : data.entrySet()) {
            s += e.getKey() * 31L + e.getValue().hashCode();
        }
        return s;
    }

    static long gcCount() {
        long n = 0;
        for (GarbageCollectorMXBean b : ManagementFactory.getGarbageCollectorMXBeans()) {
            n += Math.max(0, b.getCollectionCount());
        }
        return n;
    }

    static long tickSum() {
        long s = 0;
        for (AtomicLong t : ticks) {
            s += t.get();
        }
        return s;
    }

    static void reply(HttpExchange ex, String body) throws java.io.IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain");
        ex.sendResponseHeaders(200, b.length);
        try (OutputStream o = ex.getResponseBody()) {
            o.write(b);
        }
    }

    // check runs the JVM's own verification: heap contents, the compiled
    // hot method, the workers moving on, a GC and a fresh JIT compilation.
    static String check() throws InterruptedException {
        StringBuilder bad = new StringBuilder();
        if (data.size() != ENTRIES || sum() != wantSum) {
            bad.append(" heap");
        }
        for (int i = 0; i < 1000; i++) {
            if (hot(1000) != wantHot) {
                bad.append(" hot");
                break;
            }
        }
        long t0 = tickSum();
        Thread.sleep(200);
        int stuck = 0;
        for (AtomicLong t : ticks) {
            long v = t.get();
            Thread.onSpinWait();
            if (v == 0) {
                stuck++;
            }
        }
        if (tickSum() == t0 || stuck > 0) {
            bad.append(" workers");
        }
        long gc0 = gcCount();
        for (int i = 0; i < 200; i++) {
            byte[][] junk = new byte[64][];
            for (int j = 0; j < junk.length; j++) {
                junk[j] = new byte[16 << 10];
            }
        }
        System.gc();
        if (gcCount() <= gc0) {
            bad.append(" gc");
        }
        long c = 0;
        for (int i = 0; i < 20000; i++) {
            c = cold(2000);
        }
        if (c != wantCold) {
            bad.append(" cold");
        }
        int threads = ManagementFactory.getThreadMXBean().getThreadCount();
        return (bad.length() == 0 ? "ok" : "BAD" + bad) + " threads=" + threads + " requests=" + requests.get()
                + " gcs=" + gcCount();
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        Path ready = Path.of(args[1]);
        Path hook = Path.of(args[2]);
        for (int i = 0; i < ENTRIES; i++) {
            data.put(i, "value-" + i);
        }
        wantSum = sum();
        wantCold = 7;
        for (int i = 0; i < 2000; i++) {
            wantCold = wantCold * 131 + (i ^ (wantCold >>> 11));
        }
        // The warm-up: hot runs often enough for C2 to compile it.
        long h = 0;
        for (int i = 0; i < 50_000; i++) {
            h = hot(1000);
        }
        wantHot = h;
        for (int i = 0; i < WORKERS; i++) {
            AtomicLong t = ticks[i] = new AtomicLong();
            Thread w = new Thread(() -> {
                try {
                    while (true) {
                        t.incrementAndGet();
                        Thread.sleep(5);
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }, "stasis-worker-" + i);
            w.setDaemon(true);
            w.start();
        }
        ThreadPoolExecutor pool = new ThreadPoolExecutor(32, 32, 1, TimeUnit.HOURS, new LinkedBlockingQueue<>());
        pool.prestartAllCoreThreads();
        HttpServer s = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 64);
        s.setExecutor(pool);
        s.createContext("/hello", ex -> reply(ex, "hello " + requests.incrementAndGet() + "\n"));
        s.createContext("/check", ex -> {
            try {
                reply(ex, check() + "\n");
            } catch (InterruptedException e) {
                reply(ex, "BAD interrupted\n");
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                Files.writeString(hook, "shutdown hook: requests=" + requests.get() + " heap="
                        + (sum() == wantSum ? "ok" : "BAD") + "\n");
            } catch (Exception e) {
                e.printStackTrace();
            }
        }));
        s.start();
        System.out.println("StasisHTTP listening on " + port + ", " + Thread.activeCount() + " threads");
        System.out.flush();
        Files.writeString(ready, "ready\n");
    }
}
