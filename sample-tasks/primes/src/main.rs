fn main() {
    task_sdk::main(primes::Primes)
}
