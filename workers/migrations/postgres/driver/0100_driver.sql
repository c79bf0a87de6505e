-- The driver service's tables: registered drivers, and the rides it has heard of.
-- The same tables as on SQLite. Ids compare byte by byte (COLLATE "C", as SQLite's BINARY), so
-- searches break ties between drivers, and timers between rides, in the same order on both.

CREATE TABLE drivers (
    driver_id      TEXT COLLATE "C" PRIMARY KEY,
    name           TEXT NOT NULL,
    lat            DOUBLE PRECISION NOT NULL,
    lng            DOUBLE PRECISION NOT NULL,
    online         BOOLEAN NOT NULL,
    -- The ride this driver is reserved for. One column, so a driver cannot hold two rides;
    -- the unique index below means a ride cannot hold two drivers.
    current_ride   TEXT COLLATE "C",
    -- occurred_at (Unix ms) of the newest command applied to each field: last writer wins.
    name_at_ms     BIGINT NOT NULL,
    online_at_ms   BIGINT NOT NULL,
    location_at_ms BIGINT NOT NULL
);

CREATE UNIQUE INDEX drivers_one_driver_per_ride ON drivers (current_ride)
    WHERE current_ride IS NOT NULL;

-- Matching looks for available drivers in a latitude/longitude box.
CREATE INDEX drivers_available_by_position ON drivers (lat, lng)
    WHERE online AND current_ride IS NULL;

CREATE TABLE driver_rides (
    ride_id           TEXT COLLATE "C" PRIMARY KEY,
    -- From evt.ride.requested: all three set, or none yet.
    rider_id          TEXT,
    pickup_lat        DOUBLE PRECISION,
    pickup_lng        DOUBLE PRECISION,
    match_deadline_ms BIGINT,
    cleared           BOOLEAN NOT NULL,
    stage             TEXT NOT NULL
        CHECK (stage IN ('waiting', 'assigned', 'released', 'closed', 'unavailable')),
    -- The driver, for 'assigned' and 'released' rides only.
    driver_id         TEXT COLLATE "C",
    -- Why the ride ended ('released', 'closed').
    reason            TEXT,
    -- The saga's correlation id, copied onto the events this service publishes for the ride.
    correlation_id    TEXT,
    updated_at_ms     BIGINT NOT NULL,
    CHECK ((rider_id IS NULL) = (match_deadline_ms IS NULL)),
    CHECK ((pickup_lat IS NULL) = (match_deadline_ms IS NULL)),
    CHECK ((pickup_lng IS NULL) = (match_deadline_ms IS NULL)),
    CHECK ((stage IN ('assigned', 'released')) = (driver_id IS NOT NULL))
);

-- Waiting rides by deadline: the timer's expiry and retry scans.
CREATE INDEX driver_rides_waiting_by_deadline ON driver_rides (match_deadline_ms)
    WHERE stage = 'waiting';

-- Waiting cleared rides in a latitude/longitude box: offers to a driver who became available.
CREATE INDEX driver_rides_waiting_by_pickup ON driver_rides (pickup_lat, pickup_lng)
    WHERE stage = 'waiting' AND cleared;

-- Ended rides by age: retention.
CREATE INDEX driver_rides_ended_by_age ON driver_rides (updated_at_ms)
    WHERE stage IN ('released', 'closed', 'unavailable');
