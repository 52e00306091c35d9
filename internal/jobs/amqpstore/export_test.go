package amqpstore

// DelayBucket exports delayBucket to the tests.
var DelayBucket = delayBucket
