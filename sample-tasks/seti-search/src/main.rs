fn main() {
    task_sdk::main(seti_search::Search)
}
