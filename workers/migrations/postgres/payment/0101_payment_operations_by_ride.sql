-- A batch loads each ride's journaled operations along with its payment.
CREATE INDEX payment_operations_by_ride ON payment_operations (ride_id);
