/*
 * thermostat — a control loop that picks its own cadence.
 *
 * Each tick simulates the room for the time elapsed since the previous tick (heater on:
 * +1 m°C per ms; off: drifts toward AMBIENT_MC), adds a little recorded noise from the host's
 * randomness, switches the heater with hysteresis around target_mc and decides when to run
 * again: far from the target (more than 2 °C away) it ticks every 50 ms, near it every 500 ms.
 *
 * Messages (text):
 *   "target N"  set target_mc to N (m°C; optional '-', up to 18 digits) -> consume.
 *               The object does not range-check N: the descriptor's invariant
 *               (5000..=30000) and the schema range (0..=100000) make the host reject it.
 *   "status"    emit "temperature_mc=T target_mc=G heater=on|off" -> consume (no writes)
 *   anything else                                                   -> reject
 */
#include "../guest/sojourn.h"

#define AMBIENT_MC 10000
#define HEAT_MC_PER_MS 1          /* heater on: +1 m°C/ms */
#define COOL_DIVISOR 20000        /* heater off: (t - ambient) * dt / COOL_DIVISOR */
#define HYSTERESIS_MC 500
#define FAR_MC 2000
#define FAST_MS 50
#define SLOW_MS 500
#define MAX_DT_MS 2000            /* a long sleep is simulated as at most 2 s */
#define TEMP_MIN (-50000)
#define TEMP_MAX 150000

/* the time of the previous tick; lives in linear memory, so snapshots carry it */
static int64_t last_tick_ms;

static void log_last_rejection(void) {
    char reason[160];
    int32_t n = sj_last_rejection(reason, (int32_t)sizeof reason);
    if (n > 0) {
        if (n > (int32_t)sizeof reason) n = (int32_t)sizeof reason;
        sj_log_n(SJ_LOG_WARN, reason, n);
    }
}

SJ_EXPORT(sojourn_init) int64_t thermostat_init(int64_t now_ms) {
    last_tick_ms = now_ms;
    sj_log(SJ_LOG_INFO, "thermostat online");
    return 0; /* first tick as soon as the cycle allows */
}

SJ_EXPORT(sojourn_tick) int64_t thermostat_tick(int64_t now_ms) {
    log_last_rejection();

    int64_t t = sj_get_i64("temperature_mc");
    int64_t target = sj_get_i64("target_mc");
    int heater = sj_get_bool("heater_on");

    int64_t dt = now_ms - last_tick_ms;
    if (dt < 0) dt = 0;
    if (dt > MAX_DT_MS) dt = MAX_DT_MS;
    last_tick_ms = now_ms;

    if (heater) {
        t += HEAT_MC_PER_MS * dt;
    } else {
        t -= (t - AMBIENT_MC) * dt / COOL_DIVISOR;
    }

    /* sensor noise in [-20, 20] m°C: one recorded random byte per tick */
    uint8_t r;
    sj_random(&r, 1);
    t += (int64_t)(r % 41) - 20;

    if (t < TEMP_MIN) t = TEMP_MIN;
    if (t > TEMP_MAX) t = TEMP_MAX;

    int next_heater = heater;
    if (t < target - HYSTERESIS_MC) next_heater = 1;
    else if (t > target + HYSTERESIS_MC) next_heater = 0;

    sj_set_i64("temperature_mc", t);
    if (next_heater != heater) {
        sj_set_bool("heater_on", next_heater);
        sj_set_str("mode", next_heater ? "heating" : "idle");
        sj_log(SJ_LOG_INFO, next_heater ? "heater on" : "heater off");
    }

    int64_t distance = t > target ? t - target : target - t;
    return distance > FAR_MC ? FAST_MS : SLOW_MS;
}

SJ_EXPORT(sojourn_on_message) int32_t thermostat_on_message(int32_t len) {
    log_last_rejection();

    char msg[64];
    if (len < 0 || len > (int32_t)sizeof msg) return SJ_REJECT;
    int32_t n = sj_msg_read(msg, (int32_t)sizeof msg);
    if (n != len) return SJ_REJECT;

    if (sj_starts_with(msg, n, "target ")) {
        int64_t v;
        if (!sj_parse_i64(msg + 7, n - 7, &v)) return SJ_REJECT;
        sj_set_i64("target_mc", v);
        return SJ_CONSUME;
    }
    if (sj_equals(msg, n, "status")) {
        char out[96];
        int32_t o = 0;
        const char *a = "temperature_mc=";
        while (*a) out[o++] = *a++;
        o += sj_fmt_i64(out + o, sj_get_i64("temperature_mc"));
        a = " target_mc=";
        while (*a) out[o++] = *a++;
        o += sj_fmt_i64(out + o, sj_get_i64("target_mc"));
        a = sj_get_bool("heater_on") ? " heater=on" : " heater=off";
        while (*a) out[o++] = *a++;
        sj_emit(out, o);
        return SJ_CONSUME;
    }
    return SJ_REJECT;
}
