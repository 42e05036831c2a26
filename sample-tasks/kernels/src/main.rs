fn main() {
    task_sdk::main(kernels::Kernels)
}
